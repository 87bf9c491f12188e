"""What a server process keeps of results between fetches, and how it learns it is stale: each
simulation's index in memory (indexcache; running simulations' rows read in one query for many
fetches: heads), stored segments in memory (pagecache, over the byte-bounded lru), repeated
queries of finished results answered from the body cache (repeats), finished simulations'
large gzip bodies on disk (bodyfiles), and changes and deletes heard from every process
(changes)."""
