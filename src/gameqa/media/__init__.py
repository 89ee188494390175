"""Reading media: probe and sample video frames (PyAV), load images (Pillow), tell them apart."""
from gameqa.media.image import DEFAULT_MAX_PIXELS, load_image
from gameqa.media.kind import MediaKind, is_image, is_video, media_kind
from gameqa.media.policy import DEFAULT_BATCH, DEFAULT_SAMPLE, SamplePolicy, uniform_indices
from gameqa.media.video import Frame, VideoInfo, iter_batches, iter_frames, probe_video, read_frames

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SAMPLE",
    "Frame",
    "MediaKind",
    "SamplePolicy",
    "VideoInfo",
    "is_image",
    "is_video",
    "iter_batches",
    "iter_frames",
    "load_image",
    "media_kind",
    "probe_video",
    "read_frames",
    "uniform_indices",
]
