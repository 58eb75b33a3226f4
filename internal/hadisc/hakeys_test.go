package hadisc

// Reference data for a test that checks the discovery payloads Vigil
// publishes against what Home Assistant documents. Transcribed as data (key
// names only) from home-assistant/home-assistant.io, source/_integrations/:
//
//	alarm_control_panel.mqtt.markdown  commit 527766f68841fb1e923924886f2682a1e8079dac
//	binary_sensor.mqtt.markdown        commit fbc3a3b3bdcce503437401c8ea500a3f72181fd8
//	sensor.mqtt.markdown               commit 9e4a69ab998700a518e366a7f54551a150fccf94
//	event.mqtt.markdown                commit 172bcca0686c1765904a39065d10fa31cab295a1
//	image.mqtt.markdown                commit 23472596b17b3e4e94f1d589a9bdcafeeade92af
//	mqtt.markdown                      commit 0a314403e71f72c2fa6fdcb51b28d4876b4ab7c2
//	  (sections "Device discovery payload", "Discovery payload" (origin),
//	  "Using Availability topics", the abbreviation tables)
//
// These are post-2024.11 pages (device-based discovery, "platform", model_id).
// Rename: on those commits every page lists object_id ("Used instead of name
// for automatic generation of entity_id"). Newer copies of the same five
// pages (seen only as translated copies in the index, commit unknown) list
// default_entity_id instead and are otherwise key-for-key identical; the
// newest core abbreviations.py also dropped "obj_id" and added "def_ent_id".
// Allowed below therefore carries default_entity_id, and renamedKeys records
// the old name.

// componentKeys lists, per MQTT platform, the configuration variables Home
// Assistant documents (full names, not abbreviations) and which are required.
// Every page also documents, inside availability[], the keys in
// availabilityItemKeys, and inside device, the keys in deviceKeys.
var componentKeys = map[string]struct{ Required, Allowed []string }{
	// alarm_control_panel.mqtt.markdown @527766f6. The page marks platform
	// required: true but only for device-based discovery (see deviceComponentRequired).
	"alarm_control_panel": {
		Required: []string{"command_topic", "state_topic"},
		Allowed: []string{
			"availability", "availability_mode", "availability_template", "availability_topic",
			"code", "code_arm_required", "code_disarm_required", "code_trigger_required",
			"command_template", "command_topic", "default_entity_id", "device",
			"enabled_by_default", "encoding", "entity_category", "entity_picture", "icon",
			"json_attributes_template", "json_attributes_topic", "name", "payload_arm_away",
			"payload_arm_custom_bypass", "payload_arm_home", "payload_arm_night",
			"payload_arm_vacation", "payload_available", "payload_disarm", "payload_not_available",
			"payload_trigger", "platform", "qos", "retain", "state_topic", "supported_features",
			"unique_id", "value_template",
		},
	},
	// binary_sensor.mqtt.markdown @fbc3a3b3.
	"binary_sensor": {
		Required: []string{"state_topic"},
		Allowed: []string{
			"availability", "availability_mode", "availability_template", "availability_topic",
			"default_entity_id", "device", "device_class", "enabled_by_default", "encoding",
			"entity_category", "entity_picture", "expire_after", "force_update", "icon",
			"json_attributes_template", "json_attributes_topic", "name", "off_delay",
			"payload_available", "payload_not_available", "payload_off", "payload_on", "platform",
			"qos", "state_topic", "unique_id", "value_template",
		},
	},
	// sensor.mqtt.markdown @9e4a69ab.
	"sensor": {
		Required: []string{"state_topic"},
		Allowed: []string{
			"availability", "availability_mode", "availability_template", "availability_topic",
			"default_entity_id", "device", "device_class", "enabled_by_default", "encoding",
			"entity_category", "entity_picture", "expire_after", "force_update", "icon",
			"json_attributes_template", "json_attributes_topic", "last_reset_value_template",
			"name", "options", "payload_available", "payload_not_available", "platform", "qos",
			"state_class", "state_topic", "suggested_display_precision", "unique_id",
			"unit_of_measurement", "value_template",
		},
	},
	// event.mqtt.markdown @172bcca0. event_types (list) is required.
	"event": {
		Required: []string{"event_types", "state_topic"},
		Allowed: []string{
			"availability", "availability_mode", "availability_template", "availability_topic",
			"default_entity_id", "device", "device_class", "enabled_by_default", "encoding",
			"entity_category", "entity_picture", "event_types", "icon", "json_attributes_template",
			"json_attributes_topic", "name", "payload_available", "payload_not_available",
			"platform", "qos", "state_topic", "unique_id", "value_template",
		},
	},
	// image.mqtt.markdown @23472596. No key is plainly required: image_topic and
	// url_topic are each "required: exclusive" (exactly one; see oneOf).
	// content_type cannot be used with url_topic. The page (and its newer
	// copy) does not list platform, qos, payload_available or
	// payload_not_available; platform is added here because mqtt.markdown
	// requires it on every component of a device-based payload.
	"image": {
		Allowed: []string{
			"availability", "availability_mode", "availability_template", "availability_topic",
			"content_type", "default_entity_id", "device", "enabled_by_default", "encoding",
			"entity_category", "entity_picture", "icon", "image_encoding", "image_topic",
			"json_attributes_template", "json_attributes_topic", "name", "platform", "unique_id",
			"url_template", "url_topic",
		},
	},
}

// renamedKeys maps a key the pinned pages document to the name newer docs
// (and newer core) use instead.
var renamedKeys = map[string]string{"object_id": "default_entity_id"}

// oneOf lists, per platform, groups of keys of which exactly one must be set.
// image: image_topic and url_topic are both "required: exclusive" ("cannot be
// used together ... but at least one of these options is required").
var oneOf = map[string][][]string{
	"image": {{"image_topic", "url_topic"}},
}

// deviceComponentRequired are keys every component inside "components"
// ("cmps") of a device-based payload must have: platform ("p") always, and
// unique_id for entity components (each page: "Required when used with
// device-based discovery"; mqtt.markdown: "Entity components must have set
// the unique_id option and have a device context").
var deviceComponentRequired = []string{"platform", "unique_id"}

// deviceKeys and originKeys: keys documented inside device and origin.
// device: identifiers or connections must be present ("At least one of
// identifiers or connections"). Note via_device has no abbreviation in
// DEVICE_ABBREVIATIONS.
var deviceKeys = []string{
	"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
	"model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device",
}

// originKeys: mqtt.markdown "Discovery payload"; name is "(Required)". The
// origin block is recommended in every discovery payload and required in a
// device-based one.
var originKeys = []string{"name", "support_url", "sw_version"}

var originRequired = []string{"name"}

// availabilityItemKeys are the keys of one entry of the availability list;
// topic is required. payload_available defaults to "online",
// payload_not_available to "offline"; availability_mode is one of all, any,
// latest (default latest). availability and availability_topic must not be
// used together.
var availabilityItemKeys = []string{"payload_available", "payload_not_available", "topic", "value_template"}

// deviceDiscoveryKeys: the keys documented at the top level of a device-based
// discovery payload (topic <prefix>/device/<object_id>/config). device ("dev")
// and origin ("o") are mandatory and "cannot be overridden at the
// entity/component level"; components go under "components" ("cmps"). The
// shared options are the availability options, origin, command_topic,
// state_topic, qos and encoding. Quirk: the prose says components is
// "abbreviated as cmp" but the abbreviation table and every example use
// "cmps" (core: "cmps").
var deviceDiscoveryRequired = []string{"components", "device", "origin"}

var deviceDiscoveryKeys = []string{
	"availability", "availability_mode", "availability_template", "availability_topic",
	"command_topic", "components", "device", "encoding", "origin", "payload_available",
	"payload_not_available", "qos", "state_topic",
}

// anyDiscoveryKeys may appear at the top level of any discovery payload:
// "~" is the base topic substituted at the start or end of *_topic values,
// and {"migrate_discovery": true} is the payload that starts (or rolls back)
// a migration between single-component and device-based discovery.
var anyDiscoveryKeys = []string{"migrate_discovery", "~"}

// alarm_control_panel values from alarm_control_panel.mqtt.markdown.
var (
	// States accepted on state_topic (lower case).
	alarmStates = []string{
		"armed_away", "armed_custom_bypass", "armed_home", "armed_night", "armed_vacation",
		"arming", "disarmed", "disarming", "pending", "triggered",
	}
	// supported_features options; the default is all six.
	alarmSupportedFeatures = []string{
		"arm_away", "arm_custom_bypass", "arm_home", "arm_night", "arm_vacation", "trigger",
	}
	// Documented payload defaults.
	alarmPayloadDefaults = map[string]string{
		"payload_arm_away":          "ARM_AWAY",
		"payload_arm_custom_bypass": "ARM_CUSTOM_BYPASS",
		"payload_arm_home":          "ARM_HOME",
		"payload_arm_night":         "ARM_NIGHT",
		"payload_arm_vacation":      "ARM_VACATION",
		"payload_disarm":            "DISARM",
		"payload_trigger":           "TRIGGER",
	}
)
