"""Video I/O for curation and the dataset: the shared implementation in `ingredients.video_io`."""

from ingredients.video_io import VideoInfo, VideoReadError, probe_video, read_video, write_video

__all__ = ["VideoInfo", "VideoReadError", "probe_video", "read_video", "write_video"]
