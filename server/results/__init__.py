"""The results hot path, in the order a request meets it: upload parsing and page encoding
(upload, deflate), query filters (filters), content negotiation and ETags (negotiation), stored
segments from the cache or the database (pagecache, lru) and the spliced body (render)."""
