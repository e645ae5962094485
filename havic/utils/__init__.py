"""Small utilities shared by the library and the tools."""
from havic.utils.logging import get_logger, global_rank, setup_logging

__all__ = ["get_logger", "global_rank", "setup_logging"]
