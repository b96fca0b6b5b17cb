#!/bin/sh
# At boot (AMI user data, cloud-init): deploy the role's latest release before joining the cluster.
# A non-zero exit keeps a broken server out: don't register it with the load balancer.
set -e
/usr/local/bin/pulldeploy agent --role web --from-kv --retry 3
# … then join the load balancer / start serving.
