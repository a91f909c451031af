"""What runs a node besides its rounds: the view of it the other parts get (``view.py``),
serving (model cache, inference, resources: ``serving.py``), the console monitor and the
systemd notifications. The composition root itself is ``fog_appliance/app.py``."""
