"""Data loading: decoding, audio features, face crops, datasets."""
