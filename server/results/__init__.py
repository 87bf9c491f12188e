"""Results, in the order requests meet them. POST /results: a large upload parsed a page at a
time (pagesplit), each page serialised and compressed once into joinable deflate segments
(upload, deflate). GET /results: what the server keeps so that a fetch need not ask the
database (caches), and the answer worked out and sent from it (fetch)."""
