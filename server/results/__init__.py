"""Results, in the order requests meet them. POST /results: a large upload parsed a page at a
time (pagesplit), each page serialised and compressed once (upload, deflate). GET /results:
query filters (filters), the simulation's index from memory (indexcache; running simulations'
rows read in one query for many fetches: heads), content negotiation and ETags (negotiation),
stored segments from the cache or the database (pagecache, lru), the spliced body (render),
inflated for identity clients (inflating), written to the socket (writing), kept on disk for
finished simulations (bodyfiles, stores); changes and deletes heard from every process
(changes)."""
