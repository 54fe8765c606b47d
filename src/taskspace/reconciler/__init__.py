"""Loops that move the world towards what the database says: load → work → apply."""
