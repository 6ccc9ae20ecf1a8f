"""livestats contract package: event models, key names, the publisher. Imported, never run."""
