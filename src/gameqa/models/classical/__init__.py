"""Classical image-quality metrics in numpy/scipy on RGB uint8 frames: PSNR and SSIM (full reference,
on BT.601 luma) and NIQE (no reference)."""
from gameqa.models.classical.luma import luma
from gameqa.models.classical.naturalness import niqe
from gameqa.models.classical.fullref import PSNR_MAX_DB, psnr, ssim

__all__ = ["psnr", "ssim", "niqe", "luma", "PSNR_MAX_DB"]
