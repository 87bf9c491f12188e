-- GET requests rotating over the paths given after `--` (e.g. one per simulation); the
-- headers given with -H (cookie, Accept-Encoding) go with every request.
local requests = {}
local index = 0

function init(args)
  for i, path in ipairs(args) do
    requests[i] = wrk.format("GET", path)
  end
  -- Threads start at different paths so that they do not move in lockstep.
  index = thread_id % #requests
end

function request()
  index = index % #requests + 1
  return requests[index]
end
