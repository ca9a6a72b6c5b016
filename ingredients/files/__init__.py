"""Files every stage writes and reads: atomic writes, content hashes, weight files, videos, frames."""
