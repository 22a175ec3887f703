"""slidead: finds faulty slide rails by their sound.

The library (this package) never imports prefect; the flows in ``flows/`` wrap it.
"""

__version__ = "0.1.0"
