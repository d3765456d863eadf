"""Everything that talks to upstream endpoints: connections, pools, balancing, transport."""
