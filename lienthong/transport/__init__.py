"""MQTT transport: node-to-node frames, broker configuration and links."""
