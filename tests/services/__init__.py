"""Real services the tests start on loopback (Kafka broker, RTSP server, Prometheus).

Each module starts one service on a free port and stops it by PID.
"""
