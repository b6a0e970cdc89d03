"""Training data sources. Each turns one kind of domain signal into `Example`s plus stats."""
