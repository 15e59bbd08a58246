# Writes tests/fixtures/preprocess/photo640x480.pil.png: the RGB pixels Pillow 13 (libjpeg-turbo)
# decodes from photo640x480.jpg. Our decoder (image crate / zune-jpeg) differs from libjpeg-turbo
# by a few levels on some pixels, so the resize parity test feeds Pillow's decoded pixels.
from PIL import Image
d = "tests/fixtures/preprocess/"
Image.open(d + "photo640x480.jpg").convert("RGB").save(d + "photo640x480.pil.png")
