"""This node among the others: the bus, presence leases, commands and watches across replicas."""
