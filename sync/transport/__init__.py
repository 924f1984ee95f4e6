"""Transports of the cloud link: HTTPS (`https`) and MQTT 5 (`mqtt`)."""
