"""Transport adapters (MQTT, CoAP) and the shared intake core they feed."""
