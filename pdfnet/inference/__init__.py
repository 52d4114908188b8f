"""Cutouts of photos: the :class:`~pdfnet.inference.predictor.Predictor`."""
