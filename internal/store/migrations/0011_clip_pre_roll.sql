-- How much of a clip is from before its trigger (RTSP cameras' pre-roll,
-- from their agent's ring).
ALTER TABLE clips ADD COLUMN pre_roll_ms INTEGER NOT NULL DEFAULT 0;
