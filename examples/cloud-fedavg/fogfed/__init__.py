"""FedAvg over fog nodes: the cloud tier of fog-appliance as a Flower App."""
