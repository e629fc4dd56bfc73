"""Private helpers shared by several subpackages; nothing here is public API.

Each helper has one home here so that the layers above do not keep private copies.
"""
