"""Persisted state shared by serving and training: settings, the model registry and the event store.

Imports neither serving nor training (dependency direction: state <- exporters <- training, state <- serving).
"""
