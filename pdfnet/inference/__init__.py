"""Cutouts of photos: the :class:`~pdfnet.inference.predictor.Predictor`, and the foreground colours of
semi-transparent pixels (:mod:`~pdfnet.inference.foreground`)."""
