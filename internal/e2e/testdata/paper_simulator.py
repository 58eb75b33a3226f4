import paho.mqtt.client as mqtt
import time
from datetime import datetime
import json
import threading
import random

class Tempsensor:
    def __init__(self, min_temp, max_temp, unit):
        self.min_temp = min_temp
        self.max_temp = max_temp
        self.unit = unit

    def read_temp(self):
        return round(random.uniform(self.min_temp, self.max_temp), 2)

class Tempsimulator:
    def __init__(self, period):
        self.period = period
        self.sensor = Tempsensor(10, 35, 'Celsius')
        self.mqtt_client = mqtt.Client("TempPub")

    def start(self):
        self.mqtt_client.connect('127.0.0.1', 1883, 60)
        self.mqtt_client.loop_start()
        self._publish_temp_data()

    def _publish_temp_data(self):
        current_time = datetime.now().strftime("%d-%m-%Y %H:%M:%S")
        temp_value = self.sensor.read_temp()
        data_payload = {
            "sensor_id": "1",
            "type": "temperature",
            "timestamp": current_time,
            "value": temp_value,
            "units": self.sensor.unit
        }

        json_msg = json.dumps(data_payload, indent=4)
        self.mqtt_client.publish("sensors/temperature", json_msg)
        print(f"Published: {json_msg}")

        threading.Timer(self.period, self._publish_temp_data).start()

temp_sim = Tempsimulator(5)
temp_sim.start()
