"""The writer: the output ELF from a plan (new PT_LOAD, PT_NOTE, metadata note;
original bytes untouched), and the file I/O that keeps it atomic and durable."""
