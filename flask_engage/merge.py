"""Merging two customers (Engage.so's ``/v1/users/merge``)."""
