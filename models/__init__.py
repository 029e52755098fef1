"""Networks, their weight registry and loading, and the helpers at the bottom of the import graph."""
