"""Reading and writing images with their metadata (TIFF stacks: ImageJ, OME, plain), and the
rules for output files shared between processes (unique partial names, locks, fingerprints).

Reading keeps what a microscopist needs from ImageJ hyperstacks (axes TZCYXS, Z spacing, unit,
frame interval, labels, display ranges), OME-TIFF (axes, physical sizes, channel names) and plain
TIFF (resolution tags, photometric). Large files are never loaded whole: a stack is cut into
*blocks* (one YX plane, with its channels where the model takes them together), read one at a time
from the TIFF pages (or straight from the file when the data are stored contiguously and
uncompressed), and written one at a time into an uncompressed contiguous output whose layout
tifffile lays down first. Outputs go to a hidden temporary file renamed into place only when every
block is written, so no truncated file ever carries a final name.

Modules, one job each: :mod:`.metadata` (TiffMeta, scaled_metadata), :mod:`.blocks`
(BlockLayout), :mod:`.reading` (TiffStack, TiffArray, open_tiff, read_tiff, read_metadata),
:mod:`.writing` (StackWriter, write_tiff, tiff_stem), :mod:`.kernel_files` (write_kernels,
read_kernels), :mod:`.outputs` (partial names, OutputLock, fingerprints).
"""

from .blocks import BlockLayout
from .kernel_files import read_kernels, write_kernels
from .metadata import IJ_INPUT_GRID_SHAPES, TiffMeta, micrometres, scaled_metadata
from .outputs import OutputLock, file_fingerprint, partial_glob, partial_path
from .reading import TiffArray, TiffStack, open_tiff, read_metadata, read_tiff
from .writing import BIGTIFF_LIMIT, StackWriter, tiff_stem, write_tiff

__all__ = ["BIGTIFF_LIMIT", "IJ_INPUT_GRID_SHAPES", "BlockLayout", "OutputLock", "StackWriter",
           "TiffArray", "TiffMeta", "TiffStack", "file_fingerprint", "open_tiff", "partial_glob",
           "partial_path", "read_kernels", "read_metadata", "read_tiff", "scaled_metadata",
           "micrometres", "tiff_stem", "write_kernels", "write_tiff"]
