"""Input rows. `readers` gets rows out of one corpus file exactly as they were read (the byte
level: formats, compression, encodings); `records` validates them into the one record type
that travels from reading to writing, with a reason for every rejected row.

Imports nothing from potstill above `progress`/`memory`/`store` (the config imports this room).
"""
