"""The OCR server: claims jobs from the database and runs Tesseract in a pool of processes."""
