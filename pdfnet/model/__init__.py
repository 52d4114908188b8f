"""The PDFNet network: the Swin encoder, the FSE/CoA decoder, the patch strategy and the loaders of weights."""
