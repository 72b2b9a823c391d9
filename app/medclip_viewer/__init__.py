"""The viewer's modules, one per part of the page; app/viewer.py lays them out."""
