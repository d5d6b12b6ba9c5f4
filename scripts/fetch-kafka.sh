#!/usr/bin/env bash
# Fetch the Apache Kafka broker's jars from Maven Central into var/kafka/libs (idempotent).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
libs="${1:-$root/var/kafka/libs}"
mkdir -p "$libs"; libs=$(cd "$libs" && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/deploy/kafka/pom.xml")
if [ -f "$libs/kafka_2.13-$version.jar" ]; then
  exit 0
fi
command -v mvn >/dev/null || { echo "fetch-kafka: Maven (mvn) is required" >&2; exit 1; }
command -v java >/dev/null || { echo "fetch-kafka: Java 17 is required" >&2; exit 1; }
echo "fetch-kafka: downloading Apache Kafka $version jars from Maven Central into $libs"
mkdir -p "$libs"
mvn -q -B -f "$root/deploy/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime
test -f "$libs/kafka_2.13-$version.jar"
