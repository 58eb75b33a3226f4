-- A reading sent again (a broker redelivers a message whose acknowledgement
-- it did not get, to this node or another) is stored once: its device,
-- device time and sequence number identify it. Readings without a
-- sequence number (NULL) are never taken for one another. The unique index
-- also serves what readings_device_ts did (by device, then time).
DELETE FROM readings WHERE seq IS NOT NULL AND id NOT IN
    (SELECT MIN(id) FROM readings WHERE seq IS NOT NULL GROUP BY device, ts, seq);
DROP INDEX IF EXISTS readings_device_ts;
CREATE UNIQUE INDEX IF NOT EXISTS readings_once ON readings(device, ts, seq);
