"""The model core: manifest, repository (versions on disk), pool (loaded models), runtime, decoder, reference."""
