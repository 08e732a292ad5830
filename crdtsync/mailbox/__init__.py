"""crdtsync.mailbox"""
