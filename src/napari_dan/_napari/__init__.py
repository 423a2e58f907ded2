"""The napari shell of napari-dan, kept apart from the science (which lives in the core).
Everything napari.yaml names lives here:

- :mod:`.widget`: the Qt form (the dock widget);
- :mod:`.sample_data`: the sample-data contribution (layers from :mod:`napari_dan.samples`);
- :mod:`.writer`: the TIFF writer contribution;
- :mod:`.request`: turns a layer plus the widget's choices into the arguments of one engine call
  (which pixels, which axes, where the result goes), with messages a person can act on;
- :mod:`.results`: turns an engine result into layers (SR image, kernel, kernel map, FWHM
  ellipses) placed on the source layer's grid, and adds them to a viewer (replace or version);
- :mod:`.worker`: the thread worker that runs the engine tile by tile.
"""
