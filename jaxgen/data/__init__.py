"""Image datasets shared by the GANs and the image-quality evaluation."""
