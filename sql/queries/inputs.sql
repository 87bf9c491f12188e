-- The submitted input of a simulation.

-- name: insert_input
INSERT INTO inputs (simulation_id, data) VALUES ($1, $2)

-- name: get_simulation_input
-- `data` is the submitted input as zlib-compressed JSON.
SELECT s.input_type, i.data
FROM simulations s JOIN inputs i ON i.simulation_id = s.id
WHERE s.id = $1
