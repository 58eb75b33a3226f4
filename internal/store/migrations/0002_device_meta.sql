-- What a device says about itself (vigil/<site>/<device>/meta): JSON.
ALTER TABLE devices ADD COLUMN meta TEXT NOT NULL DEFAULT '';
