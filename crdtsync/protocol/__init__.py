"""crdtsync.protocol"""
