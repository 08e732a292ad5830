"""crdtsync.store"""
