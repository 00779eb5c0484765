"""The EC2 cloud backend: bakes on an EC2 bake host, registering AMIs."""
