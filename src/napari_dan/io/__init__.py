"""Reading and writing images with their metadata (TIFF stacks: ImageJ, OME, plain), and the
rules for output files shared between processes (unique partial names, locks, fingerprints)."""

from .outputs import OutputLock, file_fingerprint, partial_glob, partial_path
from .tiff import (
    BIGTIFF_LIMIT,
    BlockLayout,
    StackWriter,
    TiffArray,
    TiffMeta,
    TiffStack,
    iter_blocks,
    open_tiff,
    read_kernels,
    read_metadata,
    read_tiff,
    scaled_metadata,
    tiff_stem,
    write_kernels,
    write_tiff,
)

__all__ = ["BIGTIFF_LIMIT", "BlockLayout", "OutputLock", "StackWriter", "TiffArray", "TiffMeta",
           "TiffStack", "file_fingerprint", "iter_blocks", "open_tiff", "partial_glob",
           "partial_path", "read_kernels", "read_metadata", "read_tiff", "scaled_metadata",
           "tiff_stem", "write_kernels", "write_tiff"]
