"""Reading and writing images with their metadata (TIFF stacks: ImageJ, OME, plain)."""

from .tiff import (
    BIGTIFF_LIMIT,
    BlockLayout,
    StackWriter,
    TiffArray,
    TiffMeta,
    TiffStack,
    iter_blocks,
    open_tiff,
    partial_path,
    read_kernels,
    read_metadata,
    read_tiff,
    scaled_metadata,
    tiff_stem,
    write_kernels,
    write_tiff,
)

__all__ = ["BIGTIFF_LIMIT", "BlockLayout", "StackWriter", "TiffArray", "TiffMeta", "TiffStack",
           "iter_blocks", "open_tiff", "partial_path", "read_kernels", "read_metadata", "read_tiff",
           "scaled_metadata", "tiff_stem", "write_kernels", "write_tiff"]
