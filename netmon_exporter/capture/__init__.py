"""Capture files: pcap/pcapng readers and the packet decoder."""
