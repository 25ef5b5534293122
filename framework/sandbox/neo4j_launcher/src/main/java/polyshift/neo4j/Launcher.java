package polyshift.neo4j;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;

/**
 * Neo4j Community, embedded, with its Bolt connector on one loopback port: the documented
 * "embedded with a Bolt connector" set-up, and nothing else.
 *
 * <pre>
 * java -cp CLASSPATH polyshift.neo4j.Launcher --home DIR --port N [--config FILE] [--watch-stdin] [--ready-timeout S]
 * </pre>
 *
 * {@code FILE} holds further Neo4j settings in neo4j.conf syntax (memory, plugins directory,
 * procedure allow-lists). When the environment has {@code POLYSHIFT_NEO4J_PASSWORD}, authentication is on and user
 * {@code neo4j} gets that password (never on the command line, which other users can read).
 * Once the default database answers, {@code DIR/ready.json} appears (written whole, then renamed)
 * with the pid, the Bolt port and the server's version.
 *
 * The server stops on SIGTERM/SIGINT (a shutdown hook checkpoints and closes the store) and,
 * with {@code --watch-stdin}, when its standard input closes: the starting process holds the
 * other end, so the server never outlives it, even when that process is killed outright.
 */
public final class Launcher {
    private Launcher() {
    }

    public static void main(String[] args) throws Exception {
        Path home = null;
        int port = -1;
        boolean watchStdin = false;
        long readyTimeout = 120;
        Path config = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--home" -> home = Path.of(args[++i]).toAbsolutePath();
                case "--port" -> port = Integer.parseInt(args[++i]);
                case "--watch-stdin" -> watchStdin = true;
                case "--ready-timeout" -> readyTimeout = Long.parseLong(args[++i]);
                case "--config" -> config = Path.of(args[++i]).toAbsolutePath();
                default -> fail("unexpected argument " + args[i]);
            }
        }
        if (home == null || port <= 0) {
            fail("usage: Launcher --home DIR --port N [--watch-stdin] [key=value ...]");
        }
        String password = System.getenv("POLYSHIFT_NEO4J_PASSWORD");
        Files.createDirectories(home);
        Files.deleteIfExists(home.resolve("ready.json"));

        DatabaseManagementServiceBuilder builder = new DatabaseManagementServiceBuilder(home);
        if (config != null) {
            builder.loadPropertiesFromFile(config);
        }
        DatabaseManagementService dbms = builder
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(GraphDatabaseSettings.auth_enabled, password != null && !password.isEmpty())
                .build();
        Runtime.getRuntime().addShutdownHook(new Thread(dbms::shutdown, "polyshift-neo4j-shutdown"));
        try {
            serve(dbms, home, port, password, readyTimeout, watchStdin);
        } catch (Exception e) {
            // The database's own threads would keep the JVM alive after main failed: exit instead.
            e.printStackTrace();
            fail(e.toString());
        }
    }

    private static void serve(DatabaseManagementService dbms, Path home, int port, String password, long readyTimeout,
                              boolean watchStdin) throws Exception {
        GraphDatabaseService db = dbms.database("neo4j");
        if (!db.isAvailable(TimeUnit.SECONDS.toMillis(readyTimeout))) {
            fail("database neo4j is not available after " + readyTimeout + " s");
        }
        if (password != null && !password.isEmpty()) {
            dbms.database("system").executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD $password CHANGE NOT REQUIRED", Map.of("password", password));
        }
        List<String> component = db.executeTransactionally(
                "CALL dbms.components() YIELD versions, edition RETURN versions[0] AS version, edition", Map.of(),
                result -> {
                    Map<String, Object> row = result.next();
                    return List.of(String.valueOf(row.get("version")), String.valueOf(row.get("edition")));
                });
        String ready = String.format(
                "{\"pid\": %d, \"port\": %d, \"version\": \"%s\", \"edition\": \"%s\", \"java\": \"%s\"}%n",
                ProcessHandle.current().pid(), port, component.get(0), component.get(1),
                System.getProperty("java.version"));
        Path tmp = home.resolve("ready.json.tmp");
        Files.writeString(tmp, ready, StandardCharsets.UTF_8);
        Files.move(tmp, home.resolve("ready.json"), StandardCopyOption.ATOMIC_MOVE);

        if (watchStdin) {
            drain(System.in);
            System.exit(0); // runs the shutdown hook
        }
        Thread.currentThread().join();
    }

    private static void drain(InputStream in) {
        byte[] buffer = new byte[256];
        try {
            while (in.read(buffer) >= 0) {
                // the parent writes nothing; only the end of the stream matters
            }
        } catch (IOException ignored) {
            // a broken pipe is the parent going away too
        }
    }

    private static void fail(String message) {
        System.err.println("polyshift neo4j launcher: " + message);
        System.exit(2);
    }
}
