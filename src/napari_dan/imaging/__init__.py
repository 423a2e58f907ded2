"""The physics of the images: how a microscope or a camera makes the input the models see.

Shared by the runtime (samples, the consistency check), training and the benchmarks:

* :mod:`.degradations` - blur, MATLAB bicubic ``imresize`` and noise (the photo models)
* :mod:`.psf` - microscope PSFs in physical units (Gaussian, widefield, confocal)
* :mod:`.camera` - pixel integration (binning), shot and read noise, offset, 16-bit counts
* :mod:`.specimens` - synthetic fluorescence specimens (beads, filaments, rings, nuclei, ...)
* :mod:`.microscope` - the forward model the microscopy models are trained on
* :mod:`.spots` - the PSF measured from isolated spots
* :mod:`.metrics` - PSNR, SSIM and kernel errors
"""
