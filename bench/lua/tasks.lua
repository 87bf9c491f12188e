-- POST /tasks progress updates, as running workers send them: args after `--` are the number
-- of tasks per simulation and the simulation ids; the update key is BENCH_UPDATE_KEY of the
-- environment (a command line is any account's to read). Requests rotate over every
-- (simulation, task) pair; simulated_primaries grows, no state change (the tasks stay RUNNING).
local key, ntasks, jobs = nil, 0, {}
local count = 0
local headers = {["Content-Type"] = "application/json"}
local template = '{"simulation_id":"%s","task_id":%d,"update_key":"%s",' ..
                 '"update_dict":{"simulated_primaries":%d}}'

function init(args)
  key, ntasks = os.getenv("BENCH_UPDATE_KEY"), tonumber(args[1])
  for i = 2, #args do
    jobs[#jobs + 1] = args[i]
  end
  -- Threads start at different (simulation, task) pairs.
  count = thread_id * (ntasks + 1)
end

function request()
  count = count + 1
  local job = jobs[count % #jobs + 1]
  local task = math.floor(count / #jobs) % ntasks + 1
  local body = string.format(template, job, task, key, count)
  return wrk.format("POST", "/tasks", headers, body)
end
