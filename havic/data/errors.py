"""Typed error for media that cannot be used, shared by decoding, face cropping and inference."""
from __future__ import annotations

__all__ = ["MediaError"]


class MediaError(Exception):
    """A media file that cannot be used, with a short machine-readable reason.

    Attributes:
        path: the file concerned.
        reason: a short code, e.g. "not_found", "unreadable", "no_video_stream", "no_frames",
            "too_short", "no_face", "corrupt"; callers branch on it and report it per video.
        detail: free text for people (the underlying library message, counts, ...).
    """

    def __init__(self, path: str | object, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(self.path, reason, detail)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason} ({self.detail})" if self.detail else f"{self.path}: {self.reason}"

    def __reduce__(self):
        # Keeps the three fields when the error crosses a DataLoader worker or process boundary.
        return (type(self), (self.path, self.reason, self.detail))
